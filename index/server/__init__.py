"""The retrieval service: a FastAPI app over the store's newest generation, with a web page at /.

    GET  /api/health                      liveness and the generation being served
    GET  /api/stats                       the store: items, bits, labels, models, generation
    GET  /api/items?limit=&label=&seed=   a random sample of indexed items (the page's browse panel)
    GET  /api/items/{id}                  one item's metadata and code bits
    GET  /api/items/{id}/thumbnail        its picture as PNG, decoded from the catalogued file
    GET  /api/query?id=&k=&mode=&radius=&ties=   neighbours of an indexed item
    POST /api/query?k=&mode=&radius=&ties=       neighbours of an uploaded image (multipart field
                                          `image`, or the raw bytes as the body)
    GET  /api/duplicates?radius=&latent_max=&codes_only=&limit=&members=   near-duplicate groups (the
                                          page's near-duplicates view)
    GET  /openapi.json                    the API description

Query answers are one `hashae query --json` line plus `generation` and each result's `code` bits.
A radius query without k returns at most 1,000 items (the CLI returns every one).
Near-duplicate answers are `hashae duplicates --json`'s document plus each member's `label` and
`total_groups` (`groups` holds the first `limit`, each with its anchor and nearest members up to
`members`; `size` counts them all), computed once per generation and threshold.
Errors are JSON {"detail": "one line saying why"} with a 4xx status; an unknown id is a 404.

Files, one job each: app.py puts the app together; routes.py the endpoints; engines.py the
generation being served and its swap while `hashae index` writes; guards.py the Host, token and
body-size middleware; uploads.py reading an uploaded image; thumbnails.py item pictures;
errors.py library errors as HTTP answers; settings.py ServerSettings; static/ the page.

Safety (see ServerSettings): loopback by default, a bearer token required beyond loopback, the Host
header checked against the names the server answers to (DNS rebinding), request bodies capped
(413), thumbnails only of catalogued items, read from the indexed folder by their catalogued path.
"""

from hashae.index.server.app import create_app
from hashae.index.server.settings import ServeError, ServerSettings, is_loopback

__all__ = ["ServeError", "ServerSettings", "create_app", "is_loopback"]
