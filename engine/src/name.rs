//! Sensor and variable names, interned: every chain that reads `sensor-1.temperature` shares
//! one allocation of each name, so a registered chain costs its structure, not its strings.

use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Default)]
struct Interner {
    names: HashSet<Arc<str>>,
    /// Size after the last sweep of names no chain holds any more.
    swept_at: usize,
}

static NAMES: LazyLock<Mutex<Interner>> = LazyLock::new(Default::default);

/// A shared, immutable name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

impl Name {
    pub fn new(text: &str) -> Self {
        let mut interner = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = interner.names.get(text) {
            return Name(Arc::clone(name));
        }
        // Names of removed chains go when the table has doubled since the last sweep.
        if interner.names.len() >= 2 * interner.swept_at.max(1024) {
            interner.names.retain(|n| Arc::strong_count(n) > 1);
            interner.swept_at = interner.names.len();
        }
        let name: Arc<str> = Arc::from(text);
        interner.names.insert(Arc::clone(&name));
        Name(name)
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Name::new(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_one_allocation() {
        let a = Name::new("sensor-interned-1");
        let b = Name::new(&String::from("sensor-interned-1"));
        assert_eq!(a, b);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(&*a, "sensor-interned-1");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"sensor-interned-1\"");
        let back: Name = serde_json::from_str("\"sensor-interned-1\"").unwrap();
        assert!(Arc::ptr_eq(&a.0, &back.0));
    }
}
