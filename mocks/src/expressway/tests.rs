//! Tests of Expressway's pure parts.
