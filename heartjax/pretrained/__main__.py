from heartjax.pretrained import main

main()
