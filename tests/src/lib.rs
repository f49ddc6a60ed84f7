//! Workspace integration tests of mesh live in `tests/tests/`; shared helpers are in `tests/tests/common/`.
