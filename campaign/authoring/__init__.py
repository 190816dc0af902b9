"""The marketer's tools: dry runs, schedule diffs, previews, the funnel report and drafts from an
article. They read the store and the schedule; they never send.
"""
