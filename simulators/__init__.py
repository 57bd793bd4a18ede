"""Simulated Jakarta devices: seeded behaviours, scenarios, faults, and runners over MQTT.

Use as a library, without a broker (`simulators.simulation.Simulation`,
`simulators.scenario.load_scenario`)::

    simulation = Simulation(registry, load_scenario("flood-2020-01-01"), seed=1)
    for emission in simulation.emissions():   # in simulated time order
        emission.topic, emission.payload, emission.fault

or published (`simulators.runner.playback`, `simulators.load.LoadRun`)::

    fleet = playback(registry, scenario, FleetConfig(address, speed=3600), seed=1)
    summary = await fleet.run()            # scenario playback, one connection per device

    run = LoadRun(synthetic_devices(5000), LoadConfig(address, rate=20_000, duration_s=60))
    summary = await run.run()              # load mode, one shared connection
"""
