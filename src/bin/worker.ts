#!/usr/bin/env node
/** `worker join ...` is `dptrain worker join ...`. */
import { hideBin } from 'yargs/helpers';
import { main } from '../cli.js';

void main(['worker', ...hideBin(process.argv)], 'worker');
