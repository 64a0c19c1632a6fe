from harness import models
from harness.core.simulator import Simulator
from harness.trace.reader import TraceReader


def simulate(path, flush="strict", gfp="atomic", overrides=(), model="intel-vtd-legacy"):
    spec = models.resolve(model).with_overrides(list(overrides))
    with TraceReader(path) as r:
        return Simulator(spec, flush, gfp, r.num_cpus).run(r)
