export { wat } from '../../src/bench/wat.js';
