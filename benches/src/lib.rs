//! Benchmarks for Switchyard.
