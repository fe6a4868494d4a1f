"""HumanGlue notifications: the notification and presence backbone of the course platform."""

__version__ = "0.1.0"
