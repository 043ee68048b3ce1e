//! The local coordinator of `oar exec` (being written).
