//! Program versions: dotted numbers compared component by component.

use std::cmp::Ordering;
use std::fmt;

/// A version such as `2`, `2.1` or `2.1.7`. Missing components count as 0,
/// so `2` == `2.0` == `2.0.0`.
#[derive(Clone, Debug, Eq)]
pub struct Version {
    components: Vec<u32>,
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
        let components = text
            .split('.')
            .map(|part| {
                part.parse::<u32>().map_err(|_| {
                    format!("version `{text}` is not dotted numbers such as 2.1 or 2.1.7")
                })
            })
            .collect::<Result<Vec<u32>, String>>()?;
        Ok(Version { components })
    }

    fn component(&self, index: usize) -> u32 {
        self.components.get(index).copied().unwrap_or(0)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.components.len().max(other.components.len());
        (0..len)
            .map(|i| self.component(i).cmp(&other.component(i)))
            .find(|ordering| *ordering != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
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
        let text: Vec<String> = self.components.iter().map(u32::to_string).collect();
        f.write_str(&text.join("."))
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
    }
}
