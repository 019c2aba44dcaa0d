//! client-api
