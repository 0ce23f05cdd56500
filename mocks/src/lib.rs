//! Mock nodes of uclab. Each node kind is an async service over [`uclab_net::Net`],
//! configured from its scenario table; state lives in plain structs tested without I/O.

pub mod cas;
pub mod cucm;
pub mod dns;
pub mod host;
pub mod http;
pub mod imp;
pub mod limits;
pub mod lockout;
