//! Events as room-version PDUs: parsing, building and signing, authorisation,
//! and the client-facing format.

pub mod auth;
pub mod builder;
pub mod client_format;
pub mod pdu;

pub use pdu::Pdu;
