//! Switchyard client library.
