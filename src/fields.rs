//! A session's keys and their values (JSON text), as a request sees them.
//!
//! A loaded session's fields stay where the store's reply put them, as spans of its text:
//! loading a session of 50 keys allocates no string per key, nor a hash table (owned
//! strings in a map were most of what reading a large session cost the client). Keys the
//! request sets own their text. A lookup compares the keys in turn, which for the few dozen
//! keys of a session is cheaper than hashing them all at load; an insert already scanned
//! every key to check the size limits.

use std::ops::Range;

/// A session's keys and their values.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fields {
    /// The reply the loaded keys are in.
    text: String,
    entries: Vec<(Text, Text)>,
}

#[derive(Clone, Debug)]
enum Text {
    /// A span of `text`.
    In(Range<usize>),
    Own(String),
}

impl Fields {
    /// Room for `n` keys read in place (see [`push_span`](Self::push_span)).
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            text: String::new(),
            entries: Vec::with_capacity(n),
        }
    }

    /// Adds a key and its value read in place: spans (on character boundaries) of the text
    /// [`in_text`](Self::in_text) then gives, each key once, as a hash's fields in a reply.
    pub(crate) fn push_span(&mut self, key: Range<usize>, value: Range<usize>) {
        self.entries.push((Text::In(key), Text::In(value)));
    }

    /// The text the spans are in.
    pub(crate) fn in_text(self, text: String) -> Self {
        Self { text, ..self }
    }

    /// Owned keys and values, each key once (a hash's fields).
    pub(crate) fn of_hash(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let entries = pairs
            .into_iter()
            .map(|(k, v)| (Text::Own(k), Text::Own(v)))
            .collect();
        Self {
            text: String::new(),
            entries,
        }
    }

    fn str<'a>(&'a self, t: &'a Text) -> &'a str {
        t.of(&self.text)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| self.str(k) == key)
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| self.str(&self.entries[i].1))
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key` to `value`.
    pub(crate) fn insert(&mut self, key: String, value: String) {
        match self.position(&key) {
            Some(i) => self.entries[i].1 = Text::Own(value),
            None => self.entries.push((Text::Own(key), Text::Own(value))),
        }
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.position(key)?;
        let (_, value) = self.entries.swap_remove(i);
        Some(match value {
            Text::Own(s) => s,
            span => span.of(&self.text).to_owned(),
        })
    }

    /// Removes the keys `pick` says yes to, in one pass, handing each and its value to `take`.
    pub(crate) fn take_out(
        &mut self,
        pick: impl Fn(&str) -> bool,
        mut take: impl FnMut(&str, &str),
    ) {
        let text = &self.text;
        self.entries.retain(|(k, v)| {
            let k = k.of(text);
            let picked = pick(k);
            if picked {
                take(k, v.of(text));
            }
            !picked
        });
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key and its value, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (self.str(k), self.str(v)))
    }

    /// The bytes of every key and value together, as the size limit counts them.
    pub(crate) fn bytes(&self) -> usize {
        self.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

impl Text {
    /// The text itself, `text` being what spans are spans of.
    fn of<'a>(&'a self, text: &'a str) -> &'a str {
        match self {
            // Spans come from the reply's own framing: always in range, on boundaries.
            Self::In(r) => text.get(r.clone()).unwrap_or_default(),
            Self::Own(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_place_and_changes_on_top() {
        let text = String::from("*4\r\n$1\r\na\r\n$2\r\n\"x\"\r\n$1\r\nb\r\n$1\r\n1\r\n");
        let span = |s: &str| {
            let at = text.find(s).unwrap();
            at..at + s.len()
        };
        let mut f = Fields::with_capacity(2);
        f.push_span(span("a"), span("\"x\""));
        f.push_span(span("b"), span("1"));
        let mut f = f.in_text(text.clone());
        assert_eq!(f.get("a"), Some("\"x\""));
        assert_eq!(f.get("b"), Some("1"));
        assert_eq!(f.get("c"), None);
        assert_eq!((f.len(), f.bytes()), (2, 6));
        f.insert("b".into(), "2".into());
        f.insert("c".into(), "3".into());
        assert_eq!((f.get("b"), f.get("c"), f.len()), (Some("2"), Some("3"), 3));
        assert_eq!(f.remove("a").as_deref(), Some("\"x\""));
        assert!(!f.contains_key("a") && f.contains_key("c"));
        let mut taken = Vec::new();
        f.take_out(
            |k| k == "c",
            |k, v| taken.push((k.to_owned(), v.to_owned())),
        );
        assert_eq!(taken, [("c".to_owned(), "3".to_owned())]);
        let mut all: Vec<_> = f.iter().collect();
        all.sort();
        assert_eq!(all, [("b", "2")]);
        f.clear();
        assert!(f.is_empty());
        let mut owned = Fields::of_hash([("k".into(), "1".into()), ("l".into(), "2".into())]);
        owned.insert("k".into(), "3".into());
        assert_eq!((owned.len(), owned.get("k")), (2, Some("3")));
    }
}
