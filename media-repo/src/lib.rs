//! The media repository (`/_matrix/media/*`, `/_matrix/client/v1/media/*`):
//! uploads, image re-encoding, thumbnails, authenticated download, on the local
//! filesystem or S3-compatible storage. Its endpoints are tracked by the media
//! issue; the crate exists so the workspace layout is fixed from the start.
