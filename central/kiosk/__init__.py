"""The event kiosk: staff upload an event's photos, guests find the ones they are in with a selfie and order them.

A file per concern: `config` (the `[kiosk]` settings), `models` (the tables), `events` (events, photos and faces
kept consistent across rows, files and vectors), `vectors` (the handle on the vector index), `photos` (uploads and
files), `worker` (background face extraction), `search` (the selfie search), `limits` (rate limits), `tokens`
(signed photo links), `orders` (guests' orders and exports), `service` (`Kiosk`: the parts wired together),
`routes` and `order_routes` (the web routes), `eval` (`revisit eval search`).

Importing the package imports none of them.
"""
