//! The field register: a multi-value register with one dot per value.
//!
//! A field holds sibling values, each tagged with the [`Dot`] of the edit that wrote it. An edit
//! names the dots it had seen for that field (`supersedes`). Applying it removes those siblings
//! and adds its own value, unless the edit is already known or was itself superseded. One
//! sibling left: the field is settled. Two or more: the field is in conflict and every sibling
//! is kept until a person writes an edit that supersedes them all.
//!
//! The merge is the join of a causal dot store (delta-state CRDTs, Almeida et al. 2018):
//!
//! ```text
//! (S1, C1) ⊔ (S2, C2) = ((S1 ∩ S2) ∪ (S1 \ C2) ∪ (S2 \ C1), C1 ∪ C2)
//! ```
//!
//! where `S` are the sibling dots and `C` the dots seen. An edit is the delta
//! `({dot ↦ value}, {dot} ∪ supersedes)`. The context `C` comes from outside the register
//! ([`Seen`]): on the server it is the device table, on a free-standing replica it is the
//! version vector a [`Field`] keeps, so the register itself stores one dot per value.
//!
//! ```
//! use serde_json::json;
//! use sync_protocol::{Dot, Field, Write};
//!
//! let mut field = Field::default();
//! field.apply(Write::new(Dot::new(1, 1), json!("Lan"), &[]));
//! // Two devices edit from the same view: both values are kept.
//! field.apply(Write::new(Dot::new(2, 1), json!("Lân"), &[Dot::new(1, 1)]));
//! field.apply(Write::new(Dot::new(3, 1), json!("Lang"), &[Dot::new(1, 1)]));
//! assert!(field.register.is_conflict());
//! // A resolution supersedes every sibling and settles the field.
//! field.apply(Write::new(Dot::new(1, 2), json!("Lân"), &[Dot::new(2, 1), Dot::new(3, 1)]));
//! assert_eq!(field.register.values().collect::<Vec<_>>(), [&json!("Lân")]);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dot::{Dot, Seen, VersionVector};

/// One value of a field and the edit that wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sibling {
    pub value: Value,
    pub dot: Dot,
}

/// One write to one field: the value, the edit's dot and the dots it had seen for this field.
#[derive(Clone, Debug, PartialEq)]
pub struct Write<'a> {
    pub dot: Dot,
    pub value: Value,
    pub supersedes: &'a [Dot],
}

impl<'a> Write<'a> {
    pub fn new(dot: Dot, value: Value, supersedes: &'a [Dot]) -> Self {
        Self {
            dot,
            value,
            supersedes,
        }
    }
}

/// The sibling values of one field, oldest first. Serialized as the wire's sibling array.
///
/// The order is the order of application on the server, and it travels with the record, so
/// every replica that holds the record picks the same provisional value: the last sibling.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Register {
    siblings: Vec<Sibling>,
}

impl Register {
    /// A register holding the given siblings, oldest first (a repeated dot is dropped).
    pub fn from_siblings(siblings: Vec<Sibling>) -> Self {
        let mut register = Self::default();
        for s in siblings {
            if register.get(s.dot).is_none() {
                register.siblings.push(s);
            }
        }
        register
    }

    /// A register holding one value: what any write makes of an empty register.
    pub fn single(dot: Dot, value: Value) -> Self {
        Self {
            siblings: vec![Sibling { value, dot }],
        }
    }

    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.siblings.iter().map(|s| &s.value)
    }

    pub fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        self.siblings.iter().map(|s| s.dot)
    }

    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// Two or more siblings: concurrent edits a person has to settle.
    pub fn is_conflict(&self) -> bool {
        self.siblings.len() > 1
    }

    fn get(&self, dot: Dot) -> Option<&Sibling> {
        self.siblings.iter().find(|s| s.dot == dot)
    }

    /// The value reports use while the field is in conflict: the newest sibling (the last one
    /// the server applied). It reads only what travels with the record, so every replica
    /// picks the same one.
    pub fn provisional(&self) -> Option<&Sibling> {
        self.siblings.last()
    }

    /// Join `other` into `self`. `self_seen` is what produced `self` had seen, `other_seen` the
    /// same for `other`. Siblings new to `self` are appended in `other`'s order. Returns
    /// whether `self` changed.
    pub fn join(
        &mut self,
        self_seen: &impl Seen,
        other: &Register,
        other_seen: &impl Seen,
    ) -> bool {
        let before = self.siblings.len();
        self.siblings
            .retain(|s| other.get(s.dot).is_some() || !other_seen.has_seen(s.dot));
        let mut changed = self.siblings.len() != before;
        for o in &other.siblings {
            if self.get(o.dot).is_none() && !self_seen.has_seen(o.dot) {
                self.siblings.push(o.clone());
                changed = true;
            }
        }
        changed
    }

    /// Apply one write, given what this register's replica has seen before it. The same
    /// result as joining the delta `({dot ↦ value}, {dot} ∪ supersedes)`, without building it:
    /// the write removes exactly the siblings it supersedes.
    pub fn apply(&mut self, seen: &impl Seen, write: Write<'_>) -> bool {
        // Exactly the dots the author saw: never a value by its device and seq alone, so an
        // edit can never remove a value its author did not see, even one written under the
        // same device number by a phone restored from a backup.
        let covers = |d: Dot| write.supersedes.contains(&d);
        let before = self.siblings.len();
        let mut present = false;
        self.siblings.retain(|s| {
            if s.dot == write.dot {
                present = true;
                true
            } else {
                !covers(s.dot)
            }
        });
        let mut changed = self.siblings.len() != before;
        if !present && !seen.has_seen(write.dot) {
            self.siblings.push(Sibling {
                value: write.value,
                dot: write.dot,
            });
            changed = true;
        }
        changed
    }

    /// Order by dot: the canonical order of a replica that has no server order to follow.
    fn sort_by_dot(&mut self) {
        self.siblings.sort_by_key(|s| s.dot);
    }
}

/// A register with its own causal context: a field that can be merged in any order.
///
/// This is what a replica without a server (a test peer, a phone that merges, a future
/// peer-to-peer link) keeps per field. With no server order to follow, its siblings are kept
/// in dot order, so replicas agree on the provisional value too. `seen` holds, per device, the highest seq that wrote or
/// was superseded in this field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub register: Register,
    pub seen: VersionVector,
}

impl Field {
    /// Apply one write in any order: a write already seen, or already superseded, changes
    /// nothing.
    pub fn apply(&mut self, write: Write<'_>) -> bool {
        let (dot, supersedes) = (write.dot, write.supersedes);
        let changed = self.register.apply(&self.seen, write);
        self.register.sort_by_dot();
        for d in std::iter::once(dot).chain(supersedes.iter().copied()) {
            self.seen.insert(d);
        }
        changed
    }

    /// Merge another replica's state of the same field. Commutative, associative, idempotent.
    pub fn merge(&mut self, other: &Field) {
        if self.register.join(&self.seen, &other.register, &other.seen) {
            self.register.sort_by_dot();
        }
        self.seen.join(&other.seen);
    }
}
