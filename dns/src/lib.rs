//! shoal's service-discovery resolver (127.0.0.11 inside every container).
//!
//! Not built yet: see issue "Service-discovery DNS at 127.0.0.11". It will hold a sans-IO core
//! that answers from network-scoped records, and a hickory-server shell per container netns.
