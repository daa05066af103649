-- Each service owns its tables, in a database of its own.
CREATE DATABASE tandem_config;
CREATE DATABASE tandem_session;
