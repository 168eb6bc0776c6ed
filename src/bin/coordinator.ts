#!/usr/bin/env node
/** `coordinator start ...` is `dptrain coordinator start ...`. */
import { hideBin } from 'yargs/helpers';
import { main } from '../cli.js';

void main(['coordinator', ...hideBin(process.argv)], 'coordinator');
