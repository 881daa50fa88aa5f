"""The test suite is a package: every test module and helper has one import name,
``tests.<module>``, whether pytest collects it or another test file imports it (and a worker
subprocess started from the repository root finds ``tests.service_support`` the same way)."""
