#!/bin/sh
echo main
