"""Exit codes shared by every stage's ``main(config)`` and the ``council`` command."""

OK = 0  # the stage did its work
FAILURE = 1  # a real failure: cron alerts on it
USAGE = 2  # bad arguments or configuration
NOTHING_TO_DO = 3  # nothing to harvest, train or deploy: normal for cron
