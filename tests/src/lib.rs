//! Workspace integration tests of mesh live in `tests/tests/`; shared
//! helpers are in `tests/tests/common/`.

/// The README's Rust examples, compiled as doc tests so they never rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
