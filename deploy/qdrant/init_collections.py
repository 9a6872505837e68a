"""Create Revisit's Qdrant collections on a cluster before central's first start, with the cluster settings.

    python deploy/qdrant/init_collections.py --url http://qdrant-1:6333 [--site-tenant]

Central creates a missing collection itself with only a vector size and distance (central/vectors.py), taking
the cluster's defaults from config.yaml (replication factor 2). Running this first makes the settings explicit
and adds what central does not ask for:
  - replication_factor 2 and write_consistency_factor 1 on every collection;
  - payload indexes on `site` and `visitor`; with --site-tenant the `site` index is a tenant index
    (`is_tenant`): Qdrant keeps each site's points together on disk, which speeds up the per-site searches of
    cluster.scope = "site". (Custom sharding by site, `shard_key` per site, would also need central to pass a
    shard key on every request: not implemented.)
Existing collections are left alone (their settings are printed). Needs the Revisit package (for the collection
names and the known recognizers) and qdrant-client, both in central's virtual environment.
"""

from __future__ import annotations

import argparse
import os
import sys

from qdrant_client import QdrantClient, models

from revisit.central.vectors import collection_base
from revisit.models.manifest import Manifest


def known_recognizers() -> dict[str, int]:
    return {s.model_id: int(s.embedding_dim or 0) for s in Manifest.load() if s.role == "recognizer"}


def init_collections(
    client: QdrantClient,
    recognizers: dict[str, int],
    prefix: str = "revisit",
    replication_factor: int = 2,
    site_tenant: bool = False,
) -> list[str]:
    """Create what is missing; one line of report per collection."""
    report = []
    for recognizer, dim in recognizers.items():
        base = collection_base(prefix, recognizer)
        for name in (f"{base}_prototypes", f"{base}_sightings"):
            if client.collection_exists(name):
                params = client.get_collection(name).config.params
                report.append(
                    f"{name}: exists (replication_factor {params.replication_factor}, "
                    f"shards {params.shard_number}); left as it is"
                )
                continue
            client.create_collection(
                name,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                replication_factor=replication_factor,
                write_consistency_factor=1,
            )
            site_index = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=site_tenant)
            client.create_payload_index(name, "site", site_index)
            client.create_payload_index(name, "visitor", models.PayloadSchemaType.KEYWORD)
            report.append(
                f"{name}: created ({dim}-d, replication_factor {replication_factor}, "
                f"site index{' (tenant)' if site_tenant else ''})"
            )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="any node of the cluster, e.g. http://qdrant-1:6333")
    parser.add_argument("--api-key-env", default="QDRANT_API_KEY", help="variable holding the API key")
    parser.add_argument("--prefix", default="revisit", help="central's qdrant.prefix")
    parser.add_argument(
        "--recognizer",
        action="append",
        default=[],
        metavar="ID=DIM",
        help="a recognizer id and its dimension (default: the manifest's recognizers)",
    )
    parser.add_argument("--replication-factor", type=int, default=2)
    parser.add_argument("--site-tenant", action="store_true", help="tenant index on site (cluster.scope = site)")
    args = parser.parse_args(argv)
    recognizers = known_recognizers()
    if args.recognizer:
        recognizers = {r.rpartition("=")[0]: int(r.rpartition("=")[2]) for r in args.recognizer}
    client = (
        QdrantClient(location=":memory:")
        if args.url == ":memory:"
        else QdrantClient(url=args.url, api_key=os.environ.get(args.api_key_env) or None, timeout=30)
    )
    for line in init_collections(client, recognizers, args.prefix, args.replication_factor, args.site_tenant):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
