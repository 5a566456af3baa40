//! The I/O shell: namespaces, TAP devices, the overlay UDP socket, the forwarding thread.
