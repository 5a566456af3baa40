//! Wire views of our own formats and in-place header rewrites.
