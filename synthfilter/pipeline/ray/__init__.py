"""The local engine's stages on Ray Data, from one machine to a cluster, with the same outputs.

- ``session``: start or join Ray, Ray Data settings, shuffles by partition, small results;
- ``storage``: local or remote (s3://, gs://, ...) directories, input shards;
- ``annotations``: the score stage's annotation files read back as datasets, by chunk or record;
- ``score``: ``stages.score_shard`` per shard in Ray Data tasks (a scorer per worker process);
- ``decide``: duplicate groups by shuffles; ``components``: their connected components;
  ``one_task``: the local engine's decide stage in one task, for corpora one worker holds;
  ``estimate``: the synthetic share and the target-ratio plan;
- ``write``: decisions saved per shard, ``stages.write_shard`` per shard, report extras;
- ``engine``: ``run_pipeline_ray``, the run from end to end.

Every decision is the core's (``dedup.clusters``, ``pipeline.stages``, ``ratio``): this package
only places the work and moves tables. Ray is imported only inside functions.
"""

from synthfilter.pipeline.ray.decide import RayDecisions, decide_on_ray
from synthfilter.pipeline.ray.engine import CountedDecisions, CountedReasons, run_pipeline_ray
from synthfilter.pipeline.ray.session import cluster_cpus, collect, data_context, import_ray, ray_session, resolve
from synthfilter.pipeline.ray.storage import Store

__all__ = [
    "CountedDecisions", "CountedReasons", "RayDecisions", "Store", "cluster_cpus", "collect", "data_context",
    "decide_on_ray", "import_ray", "ray_session", "resolve", "run_pipeline_ray",
]
