//! Integration tests of palisade-authn's public API, one module per module.

mod audit;
mod password;
mod recovery;
mod throttle;
mod token;
mod totp;
