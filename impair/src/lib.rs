//! The impairment proxy (being written).
