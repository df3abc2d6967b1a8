//! Traffic policy of a model: which version a request that names none is
//! routed to. Declared in `<model>/traffic.yaml` (or overridden at run time
//! through the admin API), parsed and validated by [`policy`], applied by
//! [`split`]: a weighted canary split, sticky by a hashed key when the policy
//! names one, else a uniform draw. The `shadow` section is parsed, validated
//! and shown; mirroring is not done here.
//!
//! This module holds plain data and arithmetic: it reads no files and knows
//! nothing of the routing table.

pub mod policy;
pub mod split;

pub use policy::{Compare, Shadow, StickyKey, TRAFFIC_FILE, Target, TrafficPolicy};
pub use split::{Pick, choose, point_of};
