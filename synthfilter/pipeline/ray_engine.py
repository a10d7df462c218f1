"""The Ray Data engine's public import path; the engine itself is the package
``synthfilter.pipeline.ray`` (session and storage, score, decide, write)."""

from synthfilter.pipeline.ray import (  # noqa: F401
    CountedDecisions,
    CountedReasons,
    RayDecisions,
    Store,
    cluster_cpus,
    collect,
    data_context,
    decide_on_ray,
    import_ray,
    ray_session,
    resolve,
    run_pipeline_ray,
)
from synthfilter.pipeline.ray.annotations import AnnotationPart, FileAnnotations  # noqa: F401
from synthfilter.pipeline.ray.storage import shard_dir  # noqa: F401
from synthfilter.pipeline.ray.write import RunLengthArray  # noqa: F401
