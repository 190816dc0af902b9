"""The web service behind the emails' links and the clinic's signup form."""
