//! The client events of a run, kept compactly (issue 19).
//!
//! Expectations read every event, so a run keeps them all in memory. As [`EventRecord`]s each
//! took about 400 bytes in eight allocations (the client's name, the kind, the field list and
//! each key and value on its own); CAP1's half a million took 200 MB. Here each string is kept
//! once and named by a number: a client's name, a kind, a field key or value seen before costs
//! four bytes, and an event about 40 bytes.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::spill::Chunked;

/// A client event as recorded for expectations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// When.
    pub time: Duration,
    /// Which client.
    pub who: String,
    /// Event kind (`discovery-resolved`, …).
    pub kind: String,
    /// Event fields.
    pub fields: Vec<(String, String)>,
}

/// One event as stored: strings by number, its fields a run of [`Events::fields`].
#[derive(Clone, Copy, Debug)]
struct Packed {
    time: Duration,
    who: u32,
    kind: u32,
    first: u32,
    count: u32,
}

/// Every event of a run, in the order they came.
#[derive(Clone, Debug, Default)]
pub struct Events {
    events: Chunked<Packed>,
    /// Each event's fields, `(key, value)` by string number, one event's after another's.
    fields: Chunked<(u32, u32)>,
    strings: Vec<Box<str>>,
    /// Each string's number, found by an FNV-1a hash of the string and then compared (issue
    /// 19: a map ordered by the strings compared long client names at every level, 2.6% of
    /// CAP1's time). Numbers go in the order strings first come, as before.
    numbers: BTreeSet<(u64, u32)>,
}

impl Events {
    fn intern(&mut self, s: &str) -> u32 {
        let h = crate::rng::derive_seed(0, s);
        let strings = &self.strings;
        if let Some(&(_, n)) =
            self.numbers.range((h, 0)..=(h, u32::MAX)).find(|(_, n)| &*strings[*n as usize] == s)
        {
            return n;
        }
        let n = self.strings.len() as u32;
        self.strings.push(s.into());
        self.numbers.insert((h, n));
        n
    }

    /// Records an event.
    pub fn push(&mut self, time: Duration, who: &str, kind: &str, fields: &[(String, String)]) {
        let (who, kind) = (self.intern(who), self.intern(kind));
        let first = self.fields.len() as u32;
        for (k, v) in fields {
            let kv = (self.intern(k), self.intern(v));
            self.fields.push(kv);
        }
        let count = fields.len() as u32;
        self.events.push(Packed { time, who, kind, first, count });
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = EventRef<'_>> {
        self.events.iter().map(|p| EventRef { events: self, p: *p })
    }

    /// Each as an [`EventRecord`].
    pub fn to_records(&self) -> Vec<EventRecord> {
        let mut v = Vec::with_capacity(self.len());
        v.extend(self.iter().map(|e| e.to_record()));
        v
    }
}

/// One event of [`Events`], borrowed.
#[derive(Clone, Copy)]
pub struct EventRef<'a> {
    events: &'a Events,
    p: Packed,
}

impl<'a> EventRef<'a> {
    fn s(&self, n: u32) -> &'a str {
        &self.events.strings[n as usize]
    }

    /// When.
    pub fn time(&self) -> Duration {
        self.p.time
    }

    /// Which client.
    pub fn who(&self) -> &'a str {
        self.s(self.p.who)
    }

    /// Event kind.
    pub fn kind(&self) -> &'a str {
        self.s(self.p.kind)
    }

    /// Its fields, in the order they were given.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let (events, first) = (self.events, self.p.first as usize);
        (first..first + self.p.count as usize).map(move |i| {
            let (k, v) = events.fields[i];
            (&*events.strings[k as usize], &*events.strings[v as usize])
        })
    }

    /// As an [`EventRecord`].
    pub fn to_record(&self) -> EventRecord {
        EventRecord {
            time: self.time(),
            who: self.who().to_owned(),
            kind: self.kind().to_owned(),
            fields: self.fields().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        }
    }
}

impl std::fmt::Debug for EventRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_record().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn events_come_back_as_they_went_in() {
        let mut e = Events::default();
        assert!(e.is_empty());
        let ms = Duration::from_millis;
        e.push(ms(1), "alice", "im-presence", &fields(&[("from", "bob@x"), ("show", "away")]));
        e.push(ms(2), "bob", "signed-in", &[]);
        e.push(ms(3), "alice", "im-presence", &fields(&[("from", "carol@x"), ("show", "away")]));
        assert_eq!(e.len(), 3);
        let r = e.to_records();
        assert_eq!(r[0].fields, fields(&[("from", "bob@x"), ("show", "away")]));
        assert_eq!(
            (r[1].who.as_str(), r[1].kind.as_str(), r[1].fields.len()),
            ("bob", "signed-in", 0)
        );
        assert_eq!((r[2].time, r[2].fields[0].1.as_str()), (ms(3), "carol@x"));
        let kinds: Vec<&str> = e.iter().map(|x| x.kind()).collect();
        assert_eq!(kinds, ["im-presence", "signed-in", "im-presence"]);
        // Each string once: alice, im-presence, from, bob@x, show, away, bob, signed-in, carol@x.
        assert_eq!(e.strings.len(), 9);
    }

    #[test]
    fn strings_with_the_same_hash_keep_their_own_numbers() {
        let mut e = Events::default();
        let a = e.intern("alice");
        // As if "bob" hashed like "alice": the hash finds alice's number, the string does not.
        e.numbers.insert((crate::rng::derive_seed(0, "bob"), a));
        let b = e.intern("bob");
        assert_ne!(a, b);
        assert_eq!((e.intern("alice"), e.intern("bob")), (a, b));
        assert_eq!(&*e.strings[b as usize], "bob");
    }
}
