//! The committed header is the one cbindgen generates from the code, so a
//! change to the C ABI cannot land without its header.
//! `TESSERA_BLESS=1 cargo test -p tessera-ffi --test header` writes it again.

use std::path::Path;

#[test]
fn the_committed_header_is_generated_from_the_code() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen reads the C ABI");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8");
    let path = crate_dir.join("include/tessera.h");
    if std::env::var_os("TESSERA_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/tessera.h is not the header the code makes; run \
         `TESSERA_BLESS=1 cargo test -p tessera-ffi --test header` and commit it"
    );
}
