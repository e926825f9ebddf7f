"""kubechain-ui: a small web console over the kubechain API (`kubechain ui`).

- `views` shapes objects into the JSON the page shows (pure; never a Secret, never HTML).
- `auth` says who a request is (the caller's bearer token: TokenReview) and what they may read
  (SubjectAccessReview, cached briefly); writes go out with the caller's own token.
- `watch` keeps one list+watch per kind and fans its events out to the page's server-sent-event streams.
- `app` holds the aiohttp routes; `static/` the page (plain HTML + JS + CSS, no build step).
"""
