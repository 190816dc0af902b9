"""One test harness for every test folder: SMTP servers, engines, the web app, the CLI and a
throwaway PostgreSQL server, each built one way."""
