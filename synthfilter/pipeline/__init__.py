"""The score -> decide -> write stages and the engines that run them."""
