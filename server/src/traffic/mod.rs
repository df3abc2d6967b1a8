//! Traffic policy of a model: which version a request that names none is
//! routed to. Declared in `<model>/traffic.yaml` (or overridden at run time
//! through the admin API), parsed and validated by [`policy`], applied by
//! [`split`]: a weighted canary split, sticky by a hashed key when the policy
//! names one, else a uniform draw. For the `shadow` section, [`compare`]
//! compares a mirrored pair's outputs, [`report`] accumulates the pairs and
//! [`gate`] decides promotion; the mirroring itself is the service's.
//!
//! This module holds plain data and arithmetic: it reads no files and knows
//! nothing of the routing table.

pub mod compare;
pub mod gate;
pub mod policy;
pub mod report;
pub mod split;

pub use policy::{Compare, Gate, OnFail, OnPass, Shadow, StickyKey, TRAFFIC_FILE, Target, TrafficPolicy};
pub use split::{Pick, choose, point_of};
