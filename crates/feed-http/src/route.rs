//! [`Route`]: the one table of the public API's routes.
//!
//! Everything that needs to know the routes reads this table: `configure`
//! registers exactly [`Route::API`], the request gate asks
//! [`Route::is_health`] which requests are never shed, the metrics label
//! requests with [`Route::label`], and the OpenAPI test compares
//! [`Route::path`] with the documented paths. A route added here without a
//! handler does not compile; one added without documentation fails the test.

/// A route of the public API, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /feed/{user_id}?size=N`.
    Feed,
    /// `GET /livez`.
    Livez,
    /// `GET /readyz`.
    Readyz,
    /// Any other path (answered 404).
    Unmatched,
}

impl Route {
    /// The routes `configure` registers, in order.
    pub const API: [Self; 3] = [Self::Feed, Self::Livez, Self::Readyz];

    /// Every value, for tables indexed by route.
    pub const ALL: [Self; 4] = [Self::Feed, Self::Livez, Self::Readyz, Self::Unmatched];

    /// The prefix every feed path starts with.
    pub(crate) const FEED_PREFIX: &'static str = "/feed";

    /// The route a request path belongs to. `/feed` and `/feed/` belong to
    /// the feed route (which answers them 400: no user id).
    #[inline]
    pub fn of(path: &str) -> Self {
        match path {
            "/livez" => Self::Livez,
            "/readyz" => Self::Readyz,
            _ => match path.strip_prefix(Self::FEED_PREFIX) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => Self::Feed,
                _ => Self::Unmatched,
            },
        }
    }

    /// The path as the OpenAPI document names it (empty for
    /// [`Route::Unmatched`]).
    pub const fn path(self) -> &'static str {
        match self {
            Self::Feed => "/feed/{user_id}",
            Self::Livez => "/livez",
            Self::Readyz => "/readyz",
            Self::Unmatched => "",
        }
    }

    /// The `route` label of the request metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Feed => "feed",
            Self::Livez => "livez",
            Self::Readyz => "readyz",
            Self::Unmatched => "other",
        }
    }

    /// A health probe: never shed nor rate limited, so that an orchestrator
    /// can always ask.
    pub const fn is_health(self) -> bool {
        matches!(self, Self::Livez | Self::Readyz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_route() {
        for (path, route) in [
            ("/feed", Route::Feed),
            ("/feed/", Route::Feed),
            ("/feed/17", Route::Feed),
            ("/feed/17/x", Route::Feed),
            ("/feedx", Route::Unmatched),
            ("/livez", Route::Livez),
            ("/livez/", Route::Unmatched),
            ("/readyz", Route::Readyz),
            ("/", Route::Unmatched),
            ("/metrics", Route::Unmatched),
        ] {
            assert_eq!(Route::of(path), route, "{path}");
        }
        for route in Route::API {
            assert!(!route.path().is_empty());
        }
    }
}
