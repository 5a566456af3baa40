//! The netns testbed: nodes and containers as network namespaces (see testbed.rs).
