"""The synthetic traffic engine behind `stream.devtools.synthetic` (the public entry point).

- `world`: cards and merchants with their habits, the daily and weekly cycle;
- `legit`: legitimate spending, one simulated day at a time, vectorised with numpy;
- `scenarios`, `bursts`: the fraud scenarios (frozen dataclasses) and what they inject;
- `registry`: the scenario names, the default mix and `parse_scenarios`;
- `labels`: when a transaction's outcome becomes known (`LabelModel`);
- `traffic_config`: `TrafficConfig`; `engine`: the day-by-day simulation and the merged output.
"""
