//! Program versions: dotted numbers compared component by component.

use std::cmp::Ordering;
use std::fmt;

/// A version such as `2`, `2.1` or `2.1.7`. Missing components count as 0,
/// so `2` == `2.0` == `2.0.0`. Kept inline (no allocation): a checkout
/// parses its program's version.
#[derive(Clone, Debug, Eq)]
pub struct Version {
    /// The components given, then zeros.
    components: [u32; COMPONENTS_MAX],
    /// How many were given.
    len: usize,
}

/// Most components a version may have.
const COMPONENTS_MAX: usize = 8;

impl Version {
    pub fn parse(text: &str) -> Result<Version, String> {
        if text.split('.').count() > COMPONENTS_MAX {
            return Err(format!(
                "version `{text}` has more than {COMPONENTS_MAX} components"
            ));
        }
        let mut version = Version {
            components: [0; COMPONENTS_MAX],
            len: 0,
        };
        for part in text.split('.') {
            version.components[version.len] = part.parse::<u32>().map_err(|_| {
                format!("version `{text}` is not dotted numbers such as 2.1 or 2.1.7")
            })?;
            version.len += 1;
        }
        Ok(version)
    }
}

impl Ord for Version {
    /// Component by component; a missing one is 0, as the zeros after the
    /// given ones are.
    fn cmp(&self, other: &Self) -> Ordering {
        self.components.cmp(&other.components)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, component) in self.components[..self.len].iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{component}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn ordering() {
        assert!(v("1.9") < v("1.10"));
        assert_eq!(v("2"), v("2.0.0"));
        assert!(v("2.0.1") > v("2"));
        assert!(Version::parse("1.x").is_err());
        assert!(Version::parse("").is_err());
        assert!(Version::parse("1..2").is_err());
        assert!(v("1.2.0.0.0.0.0.1") > v("1.2"));
        assert_eq!(v("4294967295"), v("4294967295.0"));
    }

    #[test]
    fn eight_components_at_most_and_shown_as_given() {
        assert_eq!(v("2.1.7").to_string(), "2.1.7");
        assert_eq!(v("2.0").to_string(), "2.0");
        assert_eq!(v("1.2.3.4.5.6.7.8").to_string(), "1.2.3.4.5.6.7.8");
        let err = Version::parse("1.2.3.4.5.6.7.8.9").unwrap_err();
        assert!(err.contains("more than 8 components"), "{err}");
        let err = Version::parse("1.2.3.4.5.6.7.x").unwrap_err();
        assert!(err.contains("not dotted numbers"), "{err}");
    }

    proptest::proptest! {
        /// Ordered as the components padded with zeros to the same length.
        #[test]
        fn ordered_as_zero_padded_components(
            a in proptest::collection::vec(0u32..4, 1..=COMPONENTS_MAX),
            b in proptest::collection::vec(0u32..4, 1..=COMPONENTS_MAX),
        ) {
            let text = |parts: &[u32]| {
                parts.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
            };
            let padded = |parts: &[u32]| {
                let mut parts = parts.to_vec();
                parts.resize(COMPONENTS_MAX, 0);
                parts
            };
            proptest::prop_assert_eq!(v(&text(&a)).cmp(&v(&text(&b))), padded(&a).cmp(&padded(&b)));
            proptest::prop_assert_eq!(v(&text(&a)).to_string(), text(&a));
        }
    }
}
