//! Shared text: a string that is read once and then shared (`Arc<str>`)
//! instead of copied.
//!
//! A server keeps a checkout's names and its grant's id for as long as it
//! holds the seats, and hands the same text to the grant, its store record,
//! its report line and its answer. [`SharedText`] is that text: cloning it
//! counts a reference, and reading it from JSON allocates once (serde's own
//! `Arc<str>` reads a `String` first and copies it). On the wire it is a
//! plain JSON string.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::{Deserializer, Error, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Text shared by reference count; a JSON string on the wire.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedText(Arc<str>);

impl SharedText {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for SharedText {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SharedText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by shared text are looked up by `&str`.
impl Borrow<str> for SharedText {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SharedText {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(&*self.0, formatter)
    }
}

impl fmt::Debug for SharedText {
    fn fmt(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, formatter)
    }
}

impl From<&str> for SharedText {
    fn from(text: &str) -> SharedText {
        SharedText(Arc::from(text))
    }
}

impl From<String> for SharedText {
    fn from(text: String) -> SharedText {
        SharedText(Arc::from(text))
    }
}

impl From<SharedText> for String {
    fn from(text: SharedText) -> String {
        text.0.to_string()
    }
}

impl PartialEq<str> for SharedText {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for SharedText {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for SharedText {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl Serialize for SharedText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = SharedText;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<SharedText, E> {
        Ok(SharedText::from(text))
    }
}

impl<'de> Deserialize<'de> for SharedText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SharedText, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

/// In OpenAPI documents: a string.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for SharedText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <String as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for SharedText {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Text")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Named {
        name: SharedText,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display: Option<SharedText>,
    }

    #[test]
    fn reads_escapes_absence_null_and_refuses_other_types() {
        let named: Named = serde_json::from_str(r#"{"name":"a\"b\u00fc","display":":0"}"#).unwrap();
        assert_eq!(named.name, "a\"b\u{fc}");
        assert_eq!(named.display.as_deref(), Some(":0"));
        let named: Named = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(named.display, None);
        let named: Named = serde_json::from_str(r#"{"name":"x","display":null}"#).unwrap();
        assert_eq!(named.display, None);
        let err = serde_json::from_str::<Named>(r#"{"name":7}"#).unwrap_err();
        assert!(err.to_string().contains("expected a string"), "{err}");
        let err = serde_json::from_str::<Named>(r#"{"name":["x"]}"#).unwrap_err();
        assert!(err.to_string().contains("expected a string"), "{err}");
    }

    #[test]
    fn writes_a_plain_string_and_reads_back_what_it_wrote() {
        let named = Named {
            name: SharedText::from("a\"b\n\u{fc}"),
            display: None,
        };
        let json = serde_json::to_string(&named).unwrap();
        assert_eq!(
            json,
            r#"{"name":"a\"b\n\u00fc"}"#.replace("\\u00fc", "\u{fc}")
        );
        assert_eq!(serde_json::from_str::<Named>(&json).unwrap(), named);
    }

    #[test]
    fn a_clone_shares_the_text_and_maps_look_it_up_by_str() {
        let id = SharedText::from(String::from("g-1"));
        let copy = id.clone();
        assert!(std::ptr::eq(id.as_str(), copy.as_str()));
        let mut held = HashMap::new();
        held.insert(copy, 3);
        assert_eq!(held.get("g-1"), Some(&3));
        assert_eq!(format!("{id} {id:?}"), "g-1 \"g-1\"");
        let mut sorted = vec![SharedText::from("g-2"), id.clone(), SharedText::from("g-0")];
        sorted.sort();
        assert_eq!(sorted, ["g-0", "g-1", "g-2"]);
    }
}
