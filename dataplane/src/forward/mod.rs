//! The forwarding core: the ordered steps of DESIGN.md "The data path".
