"""`callbot bench`: a load benchmark of a real `callbot serve` process.

Processes: the orchestrator (`run`), the ACS side (`acs`: phone network + N media clients), the synthetic Voice Live
model (`model`) and the server under test. The load processes tag every audio frame (`common`) so that latencies and
losses are measured frame by frame; `report` joins what each side saw into one report.
"""
