"""What a test skipped for want of MNIST says about enabling it."""

#: Appended to the skip reason of every test that needs the real MNIST IDX files.
HOW = ("; to run these tests put the four MNIST IDX files there (`vaekit train --data mnist "
       "--data-dir ../shared/data/mnist --download` fetches them)")
