pytest_plugins = ["redkit.testing"]
