"""`embedrec loadtest`: closed-loop concurrency sweeps and open-loop fixed-rate runs.

Latencies are kept as raw samples per status code, so results from several client processes
merge exactly and percentiles are computed once, on all samples. In open-loop mode latency is
measured from each request's scheduled send time, so a stalled server shows in the percentiles
(no coordinated omission).
"""
