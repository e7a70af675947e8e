//! Fault injection (filled below).
