//! Image validation: incremental structural checkers for PNG and JPEG, fed any slices.
//!
//! [`validator_for`] picks the checker for a declared type under a [`Policy`]; the
//! [`Inspector`](crate::Inspector) calls it, so every file that passes the Inspector as
//! `image/png` or `image/jpeg` is a complete, well-formed image within the policy's limits,
//! with nothing before or after it.

#[cfg(feature = "decode")]
pub mod deep;
pub mod jpeg;
pub mod png;
pub mod strip;

use crate::inspect::{AcceptAll, Validator};
use crate::policy::Policy;
use crate::sniff::MediaType;

/// The validator the policy applies to content of type `media_type`: structural PNG or JPEG
/// checks for images (followed by a full decode at [`Depth::Decode`](crate::Depth)),
/// nothing for other types.
pub fn validator_for(policy: &Policy, media_type: &MediaType) -> Box<dyn Validator> {
    let limits = &policy.limits;
    let structural: Box<dyn Validator> = if *media_type == MediaType::PNG {
        Box::new(png::PngValidator::new(limits, policy.allow_trailing))
    } else if *media_type == MediaType::JPEG {
        Box::new(jpeg::JpegValidator::new(limits, policy.allow_trailing))
    } else {
        return Box::new(AcceptAll);
    };
    #[cfg(feature = "decode")]
    if policy.depth == crate::policy::Depth::Decode {
        return Box::new(deep::DecodeValidator::new(structural, media_type, limits));
    }
    structural
}
