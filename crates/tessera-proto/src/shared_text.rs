//! Text of a request read straight into shared text (`Arc<str>`): the
//! server keeps a checkout's names for as long as it holds the seats, and
//! shares them between its grant, its store record and its report line.
//! serde's own `Arc<str>` reads a `String` first and copies it into the
//! `Arc`; this reads the text once.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserializer, Error, Visitor};
use serde::Deserialize;

struct SharedText;

impl Visitor<'_> for SharedText {
    type Value = Arc<str>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Arc<str>, E> {
        Ok(Arc::from(text))
    }
}

pub fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    deserializer.deserialize_str(SharedText)
}

pub fn optional_text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Arc<str>>, D::Error> {
    struct Text(Arc<str>);
    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
            text(deserializer).map(Text)
        }
    }
    Ok(Option::<Text>::deserialize(deserializer)?.map(|text| text.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Named {
        #[serde(deserialize_with = "text")]
        name: Arc<str>,
        #[serde(default, deserialize_with = "optional_text")]
        display: Option<Arc<str>>,
    }

    #[test]
    fn text_reads_escapes_absence_null_and_refuses_other_types() {
        let named: Named = serde_json::from_str(r#"{"name":"a\"b\u00fc","display":":0"}"#).unwrap();
        assert_eq!(&*named.name, "a\"b\u{fc}");
        assert_eq!(named.display.as_deref(), Some(":0"));
        let named: Named = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(named.display, None);
        let named: Named = serde_json::from_str(r#"{"name":"x","display":null}"#).unwrap();
        assert_eq!(named.display, None);
        let err = serde_json::from_str::<Named>(r#"{"name":7}"#).unwrap_err();
        assert!(err.to_string().contains("expected a string"), "{err}");
    }
}
