//! media-repo
