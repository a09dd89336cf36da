//! Where the session token travels: the cookie (browsers), or a request header for clients
//! that keep no cookies (mobile apps, API clients), as Spring Session's
//! `HeaderHttpSessionIdResolver` does.
//!
//! A header carries exactly what the cookie would: the same signed value, checked the same
//! way (the MAC covers the cookie's name, so a value is valid in either place), the same
//! store, round trips and semantics. New tokens (a new session, `regenerate`, `login`, a
//! lifetime change, a newer signing key) go back in a response header; an ended session
//! answers with that header empty.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};

/// How a layer takes the token from a header and gives new ones back.
#[derive(Clone, Debug)]
pub(crate) struct HeaderToken {
    /// `None`: `Authorization: Bearer <token>`.
    read: Option<HeaderName>,
    /// Where new tokens go in responses.
    pub(crate) respond: HeaderName,
}

impl HeaderToken {
    pub(crate) fn named(name: HeaderName) -> Self {
        Self {
            read: Some(name.clone()),
            respond: name,
        }
    }

    pub(crate) fn bearer(respond: HeaderName) -> Self {
        Self {
            read: None,
            respond,
        }
    }

    /// The token a request carries in the header, if it has the form of one of ours (the
    /// characters a signed value is made of): anything else is no token, never a cookie
    /// header to be parsed.
    pub(crate) fn value<'a>(&self, headers: &'a HeaderMap) -> Option<&'a [u8]> {
        let value = match &self.read {
            Some(name) => headers.get(name)?.as_bytes(),
            None => {
                let value = headers.get(AUTHORIZATION)?.as_bytes();
                let scheme = value.get(..7)?;
                if !scheme.eq_ignore_ascii_case(b"bearer ") {
                    return None;
                }
                value.get(7..)?.trim_ascii()
            }
        };
        let ours = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        (!value.is_empty() && value.iter().all(ours)).then_some(value)
    }
}

/// How the token of one request travelled, and so how its response answers.
#[derive(Clone, Debug, Default)]
pub(crate) enum Transport {
    /// The cookie only.
    #[default]
    Cookie,
    /// The header only.
    Header(HeaderName),
    /// Either: the application asked for both. `came` says how this request's token came
    /// (`None`: it carried none, so a new token goes both ways).
    Both {
        header: HeaderName,
        came: Option<Came>,
    },
}

/// The way a request's token came, when a layer accepts both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Came {
    Cookie,
    Header,
}

impl Transport {
    /// Whether responses carry `Set-Cookie`.
    pub(crate) fn cookie(&self) -> bool {
        !matches!(
            self,
            Self::Header(_)
                | Self::Both {
                    came: Some(Came::Header),
                    ..
                }
        )
    }

    /// The header responses carry new tokens in, if any.
    pub(crate) fn header(&self) -> Option<&HeaderName> {
        match self {
            Self::Cookie
            | Self::Both {
                came: Some(Came::Cookie),
                ..
            } => None,
            Self::Header(header) | Self::Both { header, .. } => Some(header),
        }
    }
}
